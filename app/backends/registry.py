"""The routing table: the model names clients may send, each with the backend that serves it.

A name resolves, in this order, to an exact model name, an alias, or the longest matching
prefix rule (`ollama/*`: the rest of the name is the upstream model; `*` alone catches every
other name). Each configured model gets one backend (one pooled HTTP client) shared by all the
routes that reach it; a route wraps its model and fallbacks in a `RoutedBackend`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass

from app.backends.azure import TokenCredential, azure_backend
from app.backends.base import Backend
from app.backends.chat_completions import ChatCompletionsBackend
from app.backends.echo import EchoBackend
from app.backends.responses import OpenAIBackend, ResponsesBackend
from app.backends.routing import RoutedBackend, Target
from app.config import ModelConfig, ModelsFile


def build_backend(config: ModelConfig, credential: TokenCredential | None = None) -> Backend:
    if config.backend == "chat_completions":
        return ChatCompletionsBackend(config)
    if config.backend == "responses":
        return ResponsesBackend(config)
    if config.backend == "openai":
        return OpenAIBackend(config)
    if config.backend == "azure":
        return azure_backend(config, credential)
    return EchoBackend(config)


@dataclass(frozen=True, slots=True)
class Route:
    """A resolved name: `config` is the model's configuration as seen under that name (its
    `name` is the name the client sent, reported back in the Response)."""

    config: ModelConfig
    backend: Backend

    @property
    def upstream_model(self) -> str:
        return self.config.target_model


class Registry:
    """Built once at start-up from the models file; owns (and closes) every backend.
    `credential` replaces `DefaultAzureCredential` for Azure models using Entra ID."""

    def __init__(self, models: ModelsFile, credential: TokenCredential | None = None) -> None:
        self.created_at = int(time.time())
        self._configs = {model.name: model for model in models.models}
        self._backends = {model.name: build_backend(model, credential) for model in models.models}
        self._slots = {
            model.name: asyncio.Semaphore(model.max_concurrency)
            for model in models.models
            if model.max_concurrency
        }
        self._exact: dict[str, Route] = {}
        for model in models.models:
            if not model.is_rule:
                for name in (model.name, *model.aliases):
                    self._exact[name] = self._route(model, name, model.target_model)
        rules = [model for model in models.models if model.is_rule]
        self._rules = sorted(rules, key=lambda rule: len(rule.name), reverse=True)

    def _target(self, config: ModelConfig, name: str, upstream_model: str) -> Target:
        return Target(
            config, name, upstream_model, self._backends[config.name], self._slots.get(config.name)
        )

    def _route(self, config: ModelConfig, name: str, upstream_model: str) -> Route:
        targets = [self._target(config, name, upstream_model)]
        for fallback in config.fallbacks:
            other = self._configs[fallback]
            targets.append(self._target(other, other.name, other.target_model))
        if name != config.name:
            config = config.model_copy(
                update={"name": name, "upstream_model": upstream_model, "aliases": []}
            )
        return Route(config, RoutedBackend(targets))

    def resolve(self, name: str) -> Route | None:
        route = self._exact.get(name)
        if route is not None:
            return route
        for rule in self._rules:
            prefix = rule.name[:-1]
            if name.startswith(prefix) and len(name) > len(prefix):
                return self._route(rule, name, name[len(prefix) :])
        return None

    def __iter__(self) -> Iterator[Route]:
        """Every exact name and alias; prefix rules cannot be listed (`resolve` finds them)."""
        return iter(self._exact.values())

    def __len__(self) -> int:
        return len(self._exact)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()
