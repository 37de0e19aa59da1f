"""Reinforcement learning with a policy that generates: rollouts through the KV-cache sampler,
rewards, advantages (GAE, group-relative), KL control, and the PPO / GRPO loop."""
