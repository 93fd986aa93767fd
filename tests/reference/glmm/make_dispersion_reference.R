# Reference fits of the NB2 dispersion model (glmmTMB's dispformula), made with glmmTMB
# (Debian's r-cran-glmmtmb). Tests never need R: they read reference_dispersion.json, which
# this script writes, and dispersion_sim.csv, the simulated panel it writes beside it. Run from
# the repository root:
#   Rscript tests/reference/glmm/make_dispersion_reference.R
# The test is tests/poolcast/glmm/test_reference_dispersion.py.
suppressPackageStartupMessages(library(glmmTMB))
dir <- "tests/reference/glmm"
out <- file.path(dir, "reference_dispersion.json")

# simulated panel: 200 SKUs x 36 months in 4 volatility classes (50 SKUs each) with NB2 sizes
# 40, 12, 4 and 1.5 (calm to volatile); random intercept sd 0.5; a covariate x. For the AR(1)
# reference a latent AR(1) level per SKU (sd 0.4, rho 0.7) on the same rows.
set.seed(20261202)
n_g <- 200; n_t <- 36
sizes <- c(a = 40, b = 12, c = 4, d = 1.5)
sku <- sprintf("s%03d", rep(seq_len(n_g), each = n_t))
cls <- rep(rep(names(sizes), each = n_g / 4), each = n_t)
sim <- data.frame(sku = sku, month = rep(seq_len(n_t), n_g), disp_class = cls)
sim$x <- round(rnorm(nrow(sim)), 4)
b0 <- rnorm(n_g, 0, 0.5)
mu <- exp(1.5 + 0.3 * sim$x + b0[rep(seq_len(n_g), each = n_t)])
sim$y <- rnbinom(nrow(sim), size = sizes[sim$disp_class], mu = mu)
sigma_a <- 0.4; rho_a <- 0.7
a <- matrix(0, n_g, n_t)
a[, 1] <- rnorm(n_g, 0, sigma_a)
for (t in 2:n_t) a[, t] <- rho_a * a[, t - 1] + sigma_a * sqrt(1 - rho_a^2) * rnorm(n_g)
mu_ar <- exp(1.5 + 0.3 * sim$x + as.vector(t(a)))
sim$y_ar <- rnbinom(nrow(sim), size = sizes[sim$disp_class], mu = mu_ar)
write.csv(sim, file.path(dir, "dispersion_sim.csv"), row.names = FALSE)
sim$month_f <- factor(sim$month, levels = sort(unique(sim$month)))

entry <- function(fit, formula, dispformula, secs) {
  s <- summary(fit)
  vc <- VarCorr(fit)$cond$sku
  ar1 <- grepl("ar1", formula)
  list(
    formula = formula,
    dispformula = dispformula,
    family = "negbin",
    data = "dispersion_sim.csv (this folder): 200 SKUs x 36 months, 4 dispersion classes",
    method = "Laplace",
    fixef = as.list(fixef(fit)$cond),
    fixef_se = as.list(sqrt(diag(vcov(fit)$cond))),
    disp_coef = as.list(fixef(fit)$disp),
    disp_coef_se = as.list(setNames(sqrt(diag(vcov(fit)$disp)), names(fixef(fit)$disp))),
    sd = as.numeric(attr(vc, "stddev")[1]),
    ar1_rho = if (ar1) as.numeric(attr(vc, "correlation")[2, 1]) else NULL,
    logLik = as.numeric(logLik(fit)),
    nobs = nrow(fit$frame),
    converged = fit$fit$convergence == 0 && isTRUE(fit$sdr$pdHess),
    seconds = secs,
    software = paste("glmmTMB", packageVersion("glmmTMB"))
  )
}
run <- function(formula, dispformula) {
  t0 <- proc.time()[["elapsed"]]
  m <- glmmTMB(as.formula(formula), dispformula = as.formula(dispformula), data = sim,
               family = nbinom2)
  list(m = m, secs = proc.time()[["elapsed"]] - t0)
}

fits <- list()
r <- run("y ~ x + (1 | sku)", "~ disp_class")
fits$sim_nb2_ri_disp_class <- entry(r$m, "y ~ x + (1 | sku)", "~ disp_class", r$secs)
r <- run("y ~ x + (1 | sku)", "~ disp_class + x")
fits$sim_nb2_ri_disp_class_x <- entry(r$m, "y ~ x + (1 | sku)", "~ disp_class + x", r$secs)
r <- run("y_ar ~ x + ar1(month_f + 0 | sku)", "~ disp_class")
fits$sim_nb2_ar1_disp_class <- entry(r$m, "y_ar ~ x + ar1(month + 0 | sku)", "~ disp_class", r$secs)

writeLines(jsonlite::toJSON(fits, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), out)
