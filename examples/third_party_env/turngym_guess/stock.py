"""A tool-using environment: look up an item's stock in two warehouses, then answer the total.

The whole tool contract in a few lines: declare ``tools`` (pydantic arguments give the JSON
schemas the model sees), step each reply through ``turngym.tools.dispatch`` (parse in the
model's tool-call style, validate, run, format), and let handlers return text or a
``ToolResult`` with the reward and the end of the episode.
"""

from typing import Literal

from pydantic import BaseModel

from turngym.envs import Task, TaskSuite, TurnEnv
from turngym.tools import Tool, ToolResult, dispatch, invalid_reply, render_tool_call

ITEMS = ["apples", "pears", "plums", "figs", "limes"]


class StockArgs(BaseModel):
    item: str
    warehouse: Literal["north", "south"]


class AnswerArgs(BaseModel):
    total: int


class StockEnv(TurnEnv):
    description = "Add up an item's stock in two warehouses, looked up with a stock tool."
    instructions = "Find how many of the item are in stock: call stock(item, warehouse) for north and south, then answer(total)."
    tools = [Tool("stock", "How many of an item one warehouse holds.", StockArgs),
             Tool("answer", "Give the total; ends the episode.", AnswerArgs)]

    def __init__(self, max_turns: int = 6, **kwargs):
        tasks = [Task(id=f"stock-{i}", prompt=f"How many {ITEMS[i % 5]} are in stock?", answer=(7 * i) % 23 + (11 * i) % 17,
                      metadata={"item": ITEMS[i % 5], "north": (7 * i) % 23, "south": (11 * i) % 17},
                      split="test" if i % 5 == 0 else "train") for i in range(50)]
        super().__init__(suite=TaskSuite("stock", tasks), max_turns=max_turns, **kwargs)

    def _reset_task(self, task):
        self.lookups = 0
        return task.prompt, {"stratum": 0}

    def _step(self, action):
        turn = dispatch(action, self.tools, {"stock": self._stock, "answer": self._answer}, style=self.call_style, final={"answer"})
        if turn.error:  # nothing ran: say why, and how to call a tool
            return invalid_reply(turn.error, self.instructions), 0.0, False, {"action_valid": False, "stratum": self.lookups}
        return turn.observation, turn.reward, turn.terminated, {"action_valid": turn.valid, "tool_calls": turn.ran,
                                                                "stratum": self.lookups, **turn.info}

    def _stock(self, args):
        self.lookups += 1
        return str(self.task.metadata[args.warehouse] if args.item == self.task.metadata["item"] else 0)

    def _answer(self, args):
        solved = args.total == self.task.answer
        return ToolResult("Correct." if solved else "Wrong.", float(solved), True, {"success": solved})

    def example_actions(self):
        return [render_tool_call("stock", {"item": "figs", "warehouse": "north"}, self.call_style), "no tool call"]
