# Reference fits for the GLMM engine's newer families, made with glmmTMB (Debian's
# r-cran-glmmtmb). Tests never need R: they read reference_families.json, which this
# script writes. Run from the repository root:
#   Rscript tests/reference/glmm/make_family_reference.R ../shared/data
# The data are read from the shared folder (Rossmann's terms forbid copying it here); the
# subset below is rebuilt the same way by tests/poolcast/glmm/test_reference_families.py.
suppressPackageStartupMessages(library(glmmTMB))
args <- commandArgs(trailingOnly = TRUE)
shared <- if (length(args) >= 1) args[1] else "../shared/data"
out <- "tests/reference/glmm/reference_families.json"

ross <- read.csv(file.path(shared, "rossmann-store-sales", "rossmann_store_monthly.csv"))
ross <- ross[ross$Store <= 100 & ross$OpenDays > 0 & ross$Sales > 0, ]
ross$y <- ross$Sales / 1000
ross$promo_days <- ross$PromoDays / 10
ross$school_days <- ross$SchoolHolidayDays / 10
ross$store <- factor(ross$Store)

entry <- function(fit, formula, family, extra = list()) {
  vc <- VarCorr(fit)$cond
  varcorr <- lapply(names(vc), function(g) {
    m <- vc[[g]]
    sds <- attr(m, "stddev")
    cm <- attr(m, "correlation")
    corr <- if (length(sds) > 1) cm[lower.tri(cm)] else list()
    list(sd = as.list(sds), corr = corr)
  })
  names(varcorr) <- names(vc)
  c(list(
    formula = formula,
    family = family,
    data = "rossmann_store_monthly.csv: Store <= 100, OpenDays > 0, Sales > 0; y = Sales/1000, promo_days = PromoDays/10, school_days = SchoolHolidayDays/10",
    method = "Laplace",
    fixef = as.list(fixef(fit)$cond),
    fixef_se = as.list(sqrt(diag(vcov(fit)$cond))),
    varcorr = varcorr,
    logLik = as.numeric(logLik(fit)),
    software = paste("glmmTMB", packageVersion("glmmTMB"))
  ), extra)
}

fits <- list()
f1 <- "y ~ promo_days + school_days + (1 | store)"
m1 <- glmmTMB(as.formula(f1), data = ross, family = Gamma(link = "log"))
fits$rossmann_gamma_ri <- entry(m1, f1, "gamma", list(gamma_shape = 1 / sigma(m1)^2, sigma = sigma(m1)))

f2 <- "y ~ promo_days + school_days + (1 + promo_days | store)"
m2 <- glmmTMB(as.formula(f2), data = ross, family = Gamma(link = "log"))
fits$rossmann_gamma_rs <- entry(m2, f2, "gamma", list(gamma_shape = 1 / sigma(m2)^2, sigma = sigma(m2)))

# Tweedie: on Rossmann (money, no zeros) the power runs to 2 and on car parts (small counts)
# to 1, both boundaries; an interior power needs zeros and continuous amounts, so the
# reference is a simulated compound Poisson-Gamma panel, written beside this script.
set.seed(20261201)
n_g <- 150; per <- 24; p <- 1.6; phi <- 1.5
g <- rep(seq_len(n_g), each = per)
x <- rnorm(n_g * per)
b <- rnorm(n_g, 0, 0.6)
mu <- exp(0.8 + 0.4 * x + b[g])
lambda <- mu^(2 - p) / (phi * (2 - p))
n_jumps <- rpois(length(mu), lambda)
y <- ifelse(n_jumps > 0, rgamma(length(mu), shape = n_jumps * (2 - p) / (p - 1),
                                scale = phi * (p - 1) * mu^(p - 1)), 0)
sim <- data.frame(y = round(y, 6), x = round(x, 6), g = paste0("g", g))
write.csv(sim, "tests/reference/glmm/tweedie_sim.csv", row.names = FALSE)
sim <- read.csv("tests/reference/glmm/tweedie_sim.csv")
f3 <- "y ~ x + (1 | g)"
m3 <- glmmTMB(as.formula(f3), data = sim, family = tweedie(link = "log"))
e3 <- entry(m3, f3, "tweedie", list(tweedie_power = unname(family_params(m3)), tweedie_phi = sigma(m3)))
e3$data <- "tweedie_sim.csv (simulated here: p = 1.6, phi = 1.5, 150 groups x 24)"
fits$simulated_tweedie_ri <- e3

# Hurdle parts on car parts (intermittent demand): a logistic GLMM for whether a part
# sells in a month, and a zero-truncated NB2 GLMM for how much when it does.
cp <- read.csv(gzfile(file.path(shared, "carparts", "carparts_monthly_long.csv.gz")))
cp <- cp[!is.na(cp$sales), ]
cp <- cp[cp$part %in% unique(cp$part)[1:300], ]
yr <- as.integer(substr(cp$month, 1, 4)); mo <- as.integer(substr(cp$month, 6, 7))
cp$t <- (yr - 1998) + (mo - 1) / 12
cp$fourier_s1 <- sin(2 * pi * mo / 12)
cp$fourier_c1 <- cos(2 * pi * mo / 12)
cp$part <- factor(cp$part)
cp$sold <- as.integer(cp$sales > 0)
cp_data <- "carparts_monthly_long.csv.gz: sales known, the first 300 parts in file order; t = years since 1998-01, fourier_s1/c1 = sin/cos(2 pi month/12)"
f5 <- "sold ~ t + fourier_s1 + fourier_c1 + (1 | part)"
m5 <- glmmTMB(as.formula(f5), data = cp, family = binomial)
e5 <- entry(m5, f5, "binomial")
e5$data <- cp_data
fits$carparts_hurdle_zero <- e5
# The count part on car parts runs to the Poisson boundary (theta -> infinity: its positive
# counts are mostly 1-3), so the zero-truncated NB2 reference uses the bundled Online Retail
# panel, whose positive monthly quantities are overdispersed: the first 200 SKUs in file order.
ol <- read.csv(gzfile("data/example/online_retail_sku_monthly.csv.gz"), colClasses = c(StockCode = "character"))
ol <- ol[ol$StockCode %in% unique(ol$StockCode)[1:200] & ol$Quantity > 0, ]
yr <- as.integer(substr(ol$Month, 1, 4)); mo <- as.integer(substr(ol$Month, 6, 7))
ol$t <- (yr - 2009) + (mo - 12) / 12
ol$fourier_s1 <- sin(2 * pi * mo / 12)
ol$fourier_c1 <- cos(2 * pi * mo / 12)
ol$sku <- factor(ol$StockCode)
f6 <- "Quantity ~ t + fourier_s1 + fourier_c1 + (1 | sku)"
m6 <- glmmTMB(as.formula(f6), data = ol, family = truncated_nbinom2)
e6 <- entry(m6, f6, "truncated_nbinom2", list(nb_theta = sigma(m6)))
e6$data <- "data/example/online_retail_sku_monthly.csv.gz: the first 200 StockCodes in file order, Quantity > 0; t = years since 2009-12, fourier_s1/c1 = sin/cos(2 pi month/12)"
fits$online_retail_hurdle_count <- e6

# SKU seasonality (issue 8, item 2): NB2 with a random intercept and uncorrelated random
# Fourier slopes per SKU, on the Online Retail months as given (all positive): the first 200
# StockCodes in file order that have at least 12 monthly rows. glmmTMB reports the `||` block
# as one diagonal group "sku.1" (correlation fixed at 0); poolcast's engine splits it, lme4
# style, into "sku.1" and "sku.2" -- tests/poolcast/glmm/test_reference_seasonal.py maps them.
ol <- read.csv(gzfile("data/example/online_retail_sku_monthly.csv.gz"), colClasses = c(StockCode = "character"))
n_rows <- table(ol$StockCode)
codes <- unique(ol$StockCode)
codes <- codes[n_rows[codes] >= 12][1:200]
ol <- ol[ol$StockCode %in% codes, ]
yr <- as.integer(substr(ol$Month, 1, 4)); mo <- as.integer(substr(ol$Month, 6, 7))
ol$t <- (yr - 2009) + (mo - 12) / 12
ol$fourier_s1 <- sin(2 * pi * mo / 12)
ol$fourier_c1 <- cos(2 * pi * mo / 12)
ol$sku <- factor(ol$StockCode)
f7 <- "Quantity ~ t + fourier_s1 + fourier_c1 + (1 | sku) + (0 + fourier_s1 + fourier_c1 || sku)"
m7 <- glmmTMB(as.formula(f7), data = ol, family = nbinom2)
e7 <- entry(m7, f7, "nbinom2", list(nb_theta = sigma(m7)))
e7$data <- "data/example/online_retail_sku_monthly.csv.gz: the first 200 StockCodes in file order with >= 12 monthly rows, all their months (Quantity > 0 as given); t = years since 2009-12, fourier_s1/c1 = sin/cos(2 pi month/12)"
fits$online_retail_sku_seasonal_nb2 <- e7

writeLines(jsonlite::toJSON(fits, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), out)
cat("wrote", out, "\n")
