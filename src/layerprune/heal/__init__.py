"""Healing after pruning: healers as plug-ins (``base``), the shared training loop (``train``),
LoRA / QLoRA / partial fine-tuning (``lora``) and distillation from the unpruned model (``kd``)."""
