"""polydiff.recipes"""
