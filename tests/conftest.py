"""Shared test set-up: nothing may reach the network; small thread count for a 2-core machine."""
import os

# Set before transformers / datasets / huggingface_hub are imported anywhere in the test session.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
