"""A faithful local emulator of a RunPod Serverless queue endpoint (needs the `emulator` extra).

See docs/emulator.md for its rules, each with its source (RunPod's docs, SDKs, issues)
or marked as our own choice.
"""

from __future__ import annotations

from runpod_queue._public import publish as _publish
from runpod_queue.emulator._app import EmulatorApp
from runpod_queue.emulator._cassette import Cassette, OnMiss, Recording
from runpod_queue.emulator._clock import Clock, ClockKind, RealClock, VirtualClock
from runpod_queue.emulator._config import EndpointSpec, Faults, Handler, ScalerKind, Timings
from runpod_queue.emulator._delivery import WebhookAttempt
from runpod_queue.emulator._external import FitnessFailure
from runpod_queue.emulator._fleet import WorkerState, WorkerView
from runpod_queue.emulator._inspect import JobView, RecordedRequest
from runpod_queue.emulator._loading import HandlerLoadError, LoadedEndpoint, load_endpoint
from runpod_queue.emulator._notices import EmulatorWarning, WarningKind
from runpod_queue.emulator._readings import Readings
from runpod_queue.emulator._server import Emulator
from runpod_queue.emulator._sim_models import Arrival, DurationModel, SimConfig, Traffic
from runpod_queue.emulator._simulate import ConfigReport, Percentiles, SimulationReport, Timeline, simulate

__all__ = [
    "Arrival",
    "Cassette",
    "Clock",
    "ClockKind",
    "ConfigReport",
    "DurationModel",
    "Emulator",
    "EmulatorApp",
    "EmulatorWarning",
    "EndpointSpec",
    "Faults",
    "FitnessFailure",
    "Handler",
    "HandlerLoadError",
    "JobView",
    "LoadedEndpoint",
    "OnMiss",
    "Percentiles",
    "Readings",
    "RealClock",
    "RecordedRequest",
    "Recording",
    "ScalerKind",
    "SimConfig",
    "SimulationReport",
    "Timeline",
    "Timings",
    "Traffic",
    "VirtualClock",
    "WarningKind",
    "WebhookAttempt",
    "WorkerState",
    "WorkerView",
    "load_endpoint",
    "simulate",
]

_publish(globals())
