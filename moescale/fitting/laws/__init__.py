"""The laws, each fitted to a table of runs: the compute law, power laws, the isoFLOP optima
(Approach 2), the parametric law (Approach 3), the loss envelope (Approach 1), the
data-constrained, joint MoE and routed laws, and the resampling they share. A law imports
only other laws."""
