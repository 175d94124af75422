"""LoRA fine-tuning of Qwen2 models for LLMTime forecasting (no MLflow here: see projects/)."""

__version__ = "0.1.0"
