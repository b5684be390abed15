"""convert stage: raw agent datasets → validated unified records (one module per source format)."""

from __future__ import annotations

from xlam_hpc.convert.base import Converter, Reject
from xlam_hpc.convert.pipeline import ConvertConfig, ConvertSummary, convert_files

__all__ = ["CONVERTERS", "ConvertConfig", "ConvertSummary", "Converter", "Reject", "convert_files"]

# The one registry: `--format` name → converter class. Order breaks ties in `--format auto`.
CONVERTERS: dict[str, type[Converter]] = {}

# --- block A (function-calling and chat formats) ---
from xlam_hpc.convert.formats.actionstudio import ActionStudio  # noqa: E402
from xlam_hpc.convert.formats.hermes import Hermes  # noqa: E402
from xlam_hpc.convert.formats.llamafactory_messages import LlamaFactoryMessages  # noqa: E402
from xlam_hpc.convert.formats.openai_messages import OpenAIMessages  # noqa: E402
from xlam_hpc.convert.formats.preference import DpoLlamaFactory, DpoTrl  # noqa: E402
from xlam_hpc.convert.formats.sharegpt import ShareGPT  # noqa: E402
from xlam_hpc.convert.formats.xlam_fc import XlamFunctionCalling  # noqa: E402

CONVERTERS.update(
    (cls.name, cls)
    for cls in (
        XlamFunctionCalling,
        ActionStudio,
        OpenAIMessages,
        LlamaFactoryMessages,
        ShareGPT,
        Hermes,
        DpoTrl,
        DpoLlamaFactory,
    )
)
# --- end block A ---

# --- block B (agent environment formats) ---
from xlam_hpc.convert.formats.agentinstruct import AgentInstruct  # noqa: E402
from xlam_hpc.convert.formats.apibank import ApiBank  # noqa: E402
from xlam_hpc.convert.formats.react import ReAct  # noqa: E402
from xlam_hpc.convert.formats.toolalpaca import ToolAlpaca  # noqa: E402
from xlam_hpc.convert.formats.toolbench import ToolBench  # noqa: E402

CONVERTERS[AgentInstruct.name] = AgentInstruct
CONVERTERS[ToolBench.name] = ToolBench
CONVERTERS[ReAct.name] = ReAct
CONVERTERS[ToolAlpaca.name] = ToolAlpaca
CONVERTERS[ApiBank.name] = ApiBank
# --- end block B ---
