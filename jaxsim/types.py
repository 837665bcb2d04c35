"""The data that flows between the parts of one episode step (defined with the
agents, the lowest layer that uses them; named here for the engine's readers)."""

from agents.base import AgentTrajectory, Trajectory, agent_view, team_reward

__all__ = ["AgentTrajectory", "Trajectory", "agent_view", "team_reward"]
