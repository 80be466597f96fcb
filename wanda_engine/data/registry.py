"""The data adapters' registries (wanda_engine.registry.Registry); adapters register themselves when
their module is imported (``wanda_engine.data.__init__`` imports them all):

    @CALIBRATION.register("wikitext2", aliases=("wikitext",))    # --calibration_dataset NAME
    def load(req: Request, name: str) -> CalibrationSet: ...

    @PREFIXES.register("hf")                                      # --calibration_dataset hf:<rest>
    @FILE_TYPES.register(".jsonl", ".json")                        # a local file, by extension
    @EVAL_TEXTS.register("wikitext2")                              # --eval NAME
"""

from __future__ import annotations

from wanda_engine.registry import Registry

CALIBRATION = Registry("calibration source", "--calibration_dataset")
PREFIXES = Registry("calibration source prefix", "--calibration_dataset")
FILE_TYPES = Registry("calibration file type", "--calibration_dataset")  # by lower-case extension; fallback: text
EVAL_TEXTS = Registry("evaluation text", "--eval")


def eval_adapter(name: str):
    """The evaluation text registered as `name` (case-insensitive), or under the calibration source
    that `name` is an alias of ("wikitext" evaluates on wikitext2); None when neither."""
    key = name.strip().lower()
    return EVAL_TEXTS.find(key) or EVAL_TEXTS.find(CALIBRATION.canonical(key) or "")
