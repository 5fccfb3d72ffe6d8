"""xfactor_core.data"""
