"""SB3 glue: the continual DQN, its policy and networks, per-task replay buffers."""
