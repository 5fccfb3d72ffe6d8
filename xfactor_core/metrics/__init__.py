"""xfactor_core.metrics"""
