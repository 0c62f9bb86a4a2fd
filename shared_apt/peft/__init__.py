"""Layer 1, the method library: every tuning method once, the site interface backbones implement, the public API
and the accounting. torch only: nothing here imports Lightning, the data code or a backbone package."""
