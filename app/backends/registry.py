"""The routing table: the model names clients may send, each with the backend that serves it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from app.backends.base import Backend
from app.backends.chat_completions import ChatCompletionsBackend
from app.config import ModelConfig, ModelsFile

BACKENDS: dict[str, type[ChatCompletionsBackend]] = {
    "chat_completions": ChatCompletionsBackend,
}


@dataclass(frozen=True, slots=True)
class Route:
    config: ModelConfig
    backend: Backend

    @property
    def upstream_model(self) -> str:
        return self.config.target_model


class Registry:
    """Built once at start-up from the models file; owns (and closes) every backend."""

    def __init__(self, models: ModelsFile) -> None:
        self.created_at = int(time.time())
        self._routes = {
            model.name: Route(model, BACKENDS[model.backend](model)) for model in models.models
        }

    def resolve(self, name: str) -> Route | None:
        return self._routes.get(name)

    def __iter__(self) -> Iterator[Route]:
        return iter(self._routes.values())

    def __len__(self) -> int:
        return len(self._routes)

    async def aclose(self) -> None:
        for route in self._routes.values():
            await route.backend.aclose()
