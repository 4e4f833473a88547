"""One-shot voice conversion on a CPU: `vc.load_model().convert(source, target)`."""
from .api import VoiceConverter, load_model
from .audio import load_wav, log_mel, save_wav
from .config import AudioConfig, Config, ModelConfig, TrainConfig, load_recipe
from .errors import VCError, VCWarning
from .input_check import InputCheck

__all__ = ["VoiceConverter", "load_model", "load_wav", "log_mel", "save_wav", "Config", "AudioConfig",
           "ModelConfig", "TrainConfig", "load_recipe", "VCError", "VCWarning", "InputCheck"]
__version__ = "0.1.0"
