"""/v1/prompts/enhance: what enhancement would make of a prompt (nothing is created or charged)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from vidfactory.api.deps import CallerDep, ContextDep
from vidfactory.api.schemas import EnhanceCreate
from vidfactory.jobs.prompting import enhance_mode, llm_endpoint
from vidfactory.prompts.enhance import enhance, word_count

router = APIRouter(prefix="/v1/prompts", tags=["prompts"])


@router.post("/enhance")
async def enhance_prompt(body: EnhanceCreate, ctx: ContextDep, _caller: CallerDep) -> dict[str, Any]:
    """`mode` rules (no model) or llm (the configured endpoint; falls back to rules with a warning)."""
    mode = body.mode or enhance_mode(ctx.settings)
    result = await run_in_threadpool(enhance, body.prompt, mode, llm_endpoint(ctx.settings))
    return {"object": "prompt.enhancement", "prompt": body.prompt, "enhanced_prompt": result.prompt,
            "mode": result.mode, "language": result.language, "words": word_count(result.prompt),
            "settings_added": list(result.settings), "warnings": list(result.warnings)}
