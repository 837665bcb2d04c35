from mechanism.iqflow.mechanism import IQFlow, IQFlowState

__all__ = ["IQFlow", "IQFlowState"]
