from .meter_module import METERTransformerSS

__all__ = ["METERTransformerSS"]
