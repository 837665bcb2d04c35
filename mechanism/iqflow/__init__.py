from mechanism.iqflow.config import IQFlowConfig
from mechanism.iqflow.mechanism import IQFlow, IQFlowState

__all__ = ["IQFlow", "IQFlowConfig", "IQFlowState"]
