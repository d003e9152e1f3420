"""PEFT LoRA adapters -> llama.cpp's GGUF adapter form (convert_lora_to_gguf.py's file)."""
