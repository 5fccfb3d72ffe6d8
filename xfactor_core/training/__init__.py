"""xfactor_core.training"""
