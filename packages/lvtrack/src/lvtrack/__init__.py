"""The MLflow layer of lv-forecast: everything the entry points in `projects/` share.

The only package of the project that imports mlflow; it composes lvdata, lvflops and lvmodel.
Nothing here imports the entry points. See README.md for the parts and the direction of imports.
"""

__version__ = "0.1.0"
