"""polydiff.data"""
