"""Score arithmetic on arrays, with no knowledge of pools, scorers or files (float16 → float32: core/half.py).

    kl.py                   the density-ratio KL family's entry points (``density_ratio_kl``, ``centered``,
                            ``whitened``): the NumPy engine on the CPU, the fused Triton kernel or blocked torch on a GPU
    kl_numpy.py             float32 blocked online log-sum-exp (the CPU engine, one BLAS thread, fixed block shapes)
    kl_torch.py             blocked torch (any CUDA device), dispatching to the Triton kernel when it is available
    kl_triton.py            the fused Triton kernel (``TRITON_INTERPRET=1`` runs it on the CPU in the tests)
    negcliploss_triton.py   negCLIPLoss's fused row/column log-sum-exp
"""
