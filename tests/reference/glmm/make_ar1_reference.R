# Reference fits of the latent AR(1) term ar1(month + 0 | sku), made with glmmTMB (Debian's
# r-cran-glmmtmb). Tests never need R: they read reference_ar1.json, which this script
# writes, and ar1_sim.csv, the simulated panel it writes beside it. Run from the repository root:
#   Rscript tests/reference/glmm/make_ar1_reference.R
# The real subset is the bundled data/example/online_retail_sku_monthly.csv.gz; the test
# rebuilds it the same way (tests/poolcast/glmm/test_reference_ar1.py).
suppressPackageStartupMessages(library(glmmTMB))
dir <- "tests/reference/glmm"
out <- file.path(dir, "reference_ar1.json")

# simulated panel: 150 SKUs x 30 months, stationary AR(1) level (sd 0.6, rho 0.8); each SKU
# starts in one of the first 10 months (shorter histories), NB2 size 5 and Poisson responses
set.seed(20261201)
n_g <- 150; n_t <- 30; sigma <- 0.6; rho <- 0.8
b <- matrix(0, n_g, n_t)
b[, 1] <- rnorm(n_g, 0, sigma)
for (t in 2:n_t) b[, t] <- rho * b[, t - 1] + sigma * sqrt(1 - rho^2) * rnorm(n_g)
sim <- data.frame(sku = sprintf("s%03d", rep(seq_len(n_g), each = n_t)),
                  month = rep(seq_len(n_t), n_g))
sim$x <- round(rnorm(nrow(sim)), 4)
mu <- exp(1 + 0.3 * sim$x + as.vector(t(b)))
sim$y_nb <- rnbinom(nrow(sim), size = 5, mu = mu)
sim$y_pois <- rpois(nrow(sim), mu)
start <- sample(1:10, n_g, replace = TRUE)
sim <- sim[sim$month >= start[match(sim$sku, sprintf("s%03d", seq_len(n_g)))], ]
write.csv(sim, file.path(dir, "ar1_sim.csv"), row.names = FALSE)
sim$month_f <- factor(sim$month, levels = sort(unique(sim$month)))

# Online Retail: the first 100 StockCodes (file order) sold in all 24 months 2009-12..2011-11;
# y = order lines, x = log(shop customers / 1000) (the whole shop's monthly activity)
ol <- read.csv(gzfile("data/example/online_retail_sku_monthly.csv.gz"),
               colClasses = c(StockCode = "character"))
ol <- ol[ol$Month < "2011-12", ]
n_months <- table(ol$StockCode)
codes <- unique(ol$StockCode)
codes <- codes[n_months[codes] == 24][1:100]
ol <- ol[ol$StockCode %in% codes, ]
ol$sku <- ol$StockCode
ol$month <- (as.integer(substr(ol$Month, 1, 4)) - 2009) * 12 + as.integer(substr(ol$Month, 6, 7)) - 11
ol$month_f <- factor(ol$month, levels = sort(unique(ol$month)))
ol$x <- log(ol$ShopCustomers / 1000)

entry <- function(fit, formula, family, data_desc, secs) {
  vc <- VarCorr(fit)$cond$sku
  list(
    formula = formula,
    family = family,
    data = data_desc,
    method = "Laplace",
    fixef = as.list(fixef(fit)$cond),
    fixef_se = as.list(sqrt(diag(vcov(fit)$cond))),
    ar1_sd = as.numeric(attr(vc, "stddev")[1]),
    ar1_rho = as.numeric(attr(vc, "correlation")[2, 1]),
    nb_theta = if (family == "negbin") sigma(fit) else NULL,
    logLik = as.numeric(logLik(fit)),
    nobs = nrow(fit$frame),
    seconds = secs,
    software = paste("glmmTMB", packageVersion("glmmTMB"))
  )
}
run <- function(formula, data, family) {
  t0 <- proc.time()[["elapsed"]]
  m <- glmmTMB(as.formula(formula), data = data,
               family = if (family == "negbin") nbinom2 else poisson)
  list(m = m, secs = proc.time()[["elapsed"]] - t0)
}

fits <- list()
sim_desc <- "ar1_sim.csv (this folder): 150 SKUs x 30 months, ragged starts"
r <- run("y_nb ~ x + ar1(month_f + 0 | sku)", sim, "negbin")
fits$sim_nb2_ar1 <- entry(r$m, "y_nb ~ x + ar1(month + 0 | sku)", "negbin", sim_desc, r$secs)
r <- run("y_pois ~ x + ar1(month_f + 0 | sku)", sim, "poisson")
fits$sim_poisson_ar1 <- entry(r$m, "y_pois ~ x + ar1(month + 0 | sku)", "poisson", sim_desc, r$secs)
ol_desc <- "data/example/online_retail_sku_monthly.csv.gz: first 100 StockCodes sold in all 24 months 2009-12..2011-11; y = Lines, x = log(ShopCustomers/1000), month = 1..24"
# NB2 runs its size to infinity here (glmmTMB: false convergence, size 3.7e7): the latent
# AR(1) level absorbs the overdispersion, so the real-data reference is Poisson
r <- run("Lines ~ x + ar1(month_f + 0 | sku)", ol, "poisson")
fits$online_retail_poisson_ar1 <- entry(r$m, "Lines ~ x + ar1(month + 0 | sku)", "poisson", ol_desc, r$secs)

writeLines(jsonlite::toJSON(fits, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), out)
cat("wrote", out, "\n")
