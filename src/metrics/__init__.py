from src.metrics.modes import ModeCoverage, mode_stats, summarize

__all__ = ["ModeCoverage", "mode_stats", "summarize"]
