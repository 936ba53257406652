"""polydiff.modalities"""
