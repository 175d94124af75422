"""Thin MLflow entry points (see MLproject). The only layer of lv-forecast that imports mlflow."""
