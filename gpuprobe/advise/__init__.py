"""Advice from measured curves: throughput curves, the batching advisor (B_opt, memory freed, replicas), Pareto frontier."""
