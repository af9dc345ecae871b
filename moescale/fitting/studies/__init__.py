"""Studies built on the fitted laws: the hold-out check, Approach 3's lack of fit, the MoE
design answers, tuned hyperparameters and the scoring of a prediction past the sweep. They
import laws, never the pipeline that runs them."""
