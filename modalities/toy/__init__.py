"""The toy modality: vector data (D,) such as the 2-D swiss roll, a residual MLP, scatter-plot samples."""
