"""Post-training with TRL and peft: SFT, reward, DPO family, RLHF, AI feedback, GRPO, distillation, quantization."""
