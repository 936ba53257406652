"""The image modality: ADM / Efficient U-Nets, image data, grids and evaluation files, cascades, editing."""
