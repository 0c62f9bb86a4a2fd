import os
import sys

# The CLIP package of this checkout (the editable install may point at another one).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "CLIP"))
