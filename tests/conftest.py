import os
import sys
from pathlib import Path

# tests import helpers (ggml_oracle, distributions) by plain module name
sys.path.insert(0, str(Path(__file__).parent))
