"""Model weights: every checkpoint format and how it loads or saves (`loading`), the known public checkpoints (`registry`), whether the Hugging Face Hub is reachable (`hub`)."""
