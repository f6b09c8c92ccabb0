"""The `faast` command: serve a model repository, build a model into one, train and validate kernels."""

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from typing import Any

log = logging.getLogger("faast")
# After --exit-timeout-secs, what a shutdown still gets: cancelled requests end and devices close
# within CLEANUP_AFTER_TIMEOUT_S; past HARD_EXIT_AFTER_TIMEOUT_S the process ends whatever still runs.
CLEANUP_AFTER_TIMEOUT_S = 0.5
HARD_EXIT_AFTER_TIMEOUT_S = 1.0


async def _serve(options, log_settings, wired):
    """Serve until SIGINT or SIGTERM. `options`: tritonserver_flags.ServeOptions."""
    from .dataplane import DataPlane
    from .grpc_server import create_server
    from .handlers import Handlers, LogHandlers, RepositoryHandlers, SharedMemoryHandlers, TraceHandlers
    from .http_server import HttpFrontend, start_http
    from .metrics import MetricsView, model_readings
    from .repository import ModelRepository
    from .shared_memory import SharedMemoryManager
    from .trace_log import TraceSettings, parse_trace_config
    from .workers import Peers

    if options.ignored:
        log.warning("ignored, as they mean nothing to faast: %s", ", ".join(f"--{name}" for name in options.ignored))
    trace = TraceSettings(parse_trace_config(options.trace_config))
    repository = ModelRepository(
        options.model_repository,
        options.model_control_mode,
        options.load_model,
        load_threads=options.model_load_thread_count,
        load_retries=options.model_load_retry_count,
        auto_complete=options.auto_complete,
    )
    problems = await repository.start()
    missing = [problem for problem in problems if problem.startswith("failed to stat file")]
    if problems and (options.exit_on_error or (missing and options.exit_on_error is None)):
        # --exit-on-error: any failure ends faast; by default only a missing repository does
        await repository.close()
        sys.stderr.write(f"error: creating server: Internal - {(missing or ['failed to load all models'])[0]}\n")
        raise SystemExit(1)
    if problems:
        log.error("Internal: %s", (missing or ["failed to load all models"])[0])
    shared_memory = SharedMemoryManager()
    identity: dict[str, Any] = {} if options.id is None else {"server_id": options.id}
    peers = Peers.of_this_process()
    dataplane = DataPlane(
        repository, shared_memory, trace, strict_readiness=options.strict_readiness, peers=peers, **identity
    )
    handlers = Handlers(
        RepositoryHandlers(repository, peers),
        SharedMemoryHandlers(shared_memory, peers, allow_client=options.allow_client_shm),
        TraceHandlers(trace, repository, peers),
        LogHandlers(log_settings, peers),
    )
    if peers is not None:  # what the other workers replay and gather here: this process's own state only
        await peers.serve(
            {
                **handlers.local_operations(),
                "statistics": lambda name, version: dataplane.local_statistics(name, version).SerializeToString(),
                "metrics.readings": lambda: model_readings(repository),
            }
        )
        log.info("worker %d of %d (pid %d)", peers.index + 1, peers.count, os.getpid())
    grpc_address, http_address, metrics_address = options.addresses()
    grpc_server, runners = None, []
    frontend = None
    http_shutdown_s = options.exit_timeout_secs + HARD_EXIT_AFTER_TIMEOUT_S  # stop_http cancels sooner
    try:
        if options.allow_grpc:
            address = f"{grpc_address}:{options.grpc_port}"
            try:
                grpc_server = create_server(dataplane, handlers, address, **wired["grpc"])
                await grpc_server.start()
            except Exception as error:
                raise _StartFailure(f"failed to start GRPC service: {error}") from error
            log.info("Started GRPCInferenceService at %s", address)
        frontend = HttpFrontend(
            dataplane, handlers, MetricsView(repository, *wired["metrics"], peers=peers), **wired["http"]
        )
        if options.allow_http:
            try:
                runners.append(
                    await start_http(
                        frontend.application(),
                        http_address,
                        options.http_port,
                        options.shares_http_port,
                        http_shutdown_s,
                    )
                )
            except Exception as error:
                raise _StartFailure(f"failed to start HTTP service: {error}") from error
            log.info("Started HTTPService at %s:%d", http_address, options.http_port)
        if options.allow_metrics:
            metrics_app = frontend.application(with_metrics=True, with_api=False)
            try:
                runners.append(
                    await start_http(
                        metrics_app, metrics_address, options.metrics_port, options.workers > 1, http_shutdown_s
                    )
                )
            except Exception as error:
                raise _StartFailure(f"failed to start Metrics service: {error}") from error
            log.info("Started Metrics Service at %s:%d", metrics_address, options.metrics_port)
    except _StartFailure as failure:
        log.error("%s", failure)
        await _stop(grpc_server, runners, frontend, repository, shared_memory, trace, peers, grace=0)
        raise SystemExit(1) from None
    dataplane.ready = True
    watching = [asyncio.ensure_future(repository.watch_devices())]  # cards that vanish and come back
    if options.model_control_mode == "poll":
        watching.append(asyncio.ensure_future(repository.poll_forever(options.repository_poll_secs)))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    _exit_anyway_after(options.exit_timeout_secs + HARD_EXIT_AFTER_TIMEOUT_S)
    log.info("shutting down: finishing in-flight requests (up to %s s)", options.exit_timeout_secs)
    dataplane.ready = False
    for task in watching:
        task.cancel()
    await _stop(
        grpc_server, runners, frontend, repository, shared_memory, trace, peers, grace=options.exit_timeout_secs
    )


class _StartFailure(Exception):
    """A transport could not start (its port taken, its certificate unreadable): tritonserver exits."""


async def _stop(grpc_server, runners, frontend, repository, shared_memory, trace, peers, grace):
    """Stop within `grace` s (--exit-timeout-secs) and CLEANUP_AFTER_TIMEOUT_S: both transports stop
    taking work at once and answer what finishes by then; gRPC calls and HTTP requests still running
    (an open stream, a body that never ends) are cancelled at `grace`; then the models stop (their
    schedulers drain, their devices close) in what time is left."""
    from .http_server import stop_http

    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace + CLEANUP_AFTER_TIMEOUT_S
    transports = []
    if grpc_server:
        transports.append(grpc_server.stop(grace=grace))
    if runners:
        transports.append(stop_http(runners, frontend, grace))
    await _bounded(asyncio.gather(*transports), deadline, "stopping the transports")
    if peers is not None:
        await _bounded(peers.close(), deadline, "closing the peer socket")
    await _bounded(repository.close(), deadline, "unloading the models")
    shared_memory.unregister()
    if trace.writer:
        trace.writer.flush()


async def _bounded(awaitable, deadline, what):
    """Await `awaitable` until the loop's time `deadline` (and at least a moment), else cancel it."""
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(awaitable, max(deadline - loop.time(), 0.05))
    except TimeoutError:
        log.warning("exit timeout expired while %s: going on without it", what)


def _exit_anyway_after(seconds):
    """End the process `seconds` from now if it is still running then: what cancelling cannot stop
    (a kernel run in a worker thread, a thread the interpreter would join at exit) does not hold
    the shutdown past --exit-timeout-secs."""

    def expire():
        log.error("exit timeout expired: exiting now")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(1)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def _wired(options) -> dict[str, Any]:
    """Keyword arguments for create_server ("grpc") and HttpFrontend ("http"), and the extra
    arguments of registry_for ("metrics"), from the flags those modules read. Only flags given are
    passed on. A bad value ends faast as tritonserver ends on one ("Bad option")."""
    from .tritonserver_flags import bad_option

    wired: dict[str, Any] = {"grpc": {}, "http": {}, "metrics": ()}
    flag = ""
    try:
        if options.grpc_restricted_protocol or options.http_restricted_api:
            from .security import parse_restrictions

            if options.grpc_restricted_protocol:
                flag = "grpc-restricted-protocol"
                wired["grpc"]["restrictions"] = parse_restrictions(options.grpc_restricted_protocol)
            if options.http_restricted_api:
                flag = "http-restricted-api"
                wired["http"]["restrictions"] = parse_restrictions(options.http_restricted_api, "http")
        if options.grpc_use_ssl or options.grpc_use_ssl_mutual:
            from .security import grpc_credentials

            flag = "grpc-use-ssl-mutual" if options.grpc_use_ssl_mutual else "grpc-use-ssl"
            wired["grpc"]["credentials"] = grpc_credentials(
                options.grpc_server_cert, options.grpc_server_key, options.grpc_root_cert, options.grpc_use_ssl_mutual
            )
        if {"metrics-config", "allow-cpu-metrics", "metrics-interval-ms"} & set(options.given):
            from .metrics import parse_metrics_config

            flag = "metrics-config"
            config = parse_metrics_config(options.metrics_config)
            config = replace(
                config, cpu_metrics=options.allow_cpu_metrics, interval_ms=int(options.metrics_interval_ms)
            )
            wired["metrics"] = (config,)
    except (ValueError, OSError) as error:
        bad_option(flag, str(error))
    if options.grpc_server_options():
        wired["grpc"]["options"] = options.grpc_server_options()
    if "http-max-input-size" in options.given:
        wired["http"]["max_input_size"] = options.http_max_input_size
    return wired


def serve(options, argv):
    """`faast serve`: `options` from tritonserver_flags.parse of `argv` (which --workers' processes
    are started with)."""
    from .trace_log import LogSettings
    from .tritonserver_flags import log_handler
    from .workers import Peers, supervise

    wired = _wired(options)  # the flags other modules read: a bad value is refused before anything starts
    if not options.model_repository:
        sys.stderr.write("error: creating server: Invalid argument - --model-repository must be specified\n")
        raise SystemExit(1)
    log_settings = LogSettings(options.log_verbose)
    log_settings.values.update(
        log_file=options.log_file,
        log_info=options.log_info,
        log_warning=options.log_warning,
        log_error=options.log_error,
        log_format=options.log_format,
    )
    handler, problem = log_handler(log_settings.values, options.log_file)
    logging.getLogger().handlers[:] = [handler]
    log_settings.update({})  # the root logger's level, from the settings
    if problem:
        log.warning("%s", problem)
    if options.workers > 1 and not Peers.of_this_process():
        raise SystemExit(supervise(argv, options.workers, options.exit_timeout_secs + HARD_EXIT_AFTER_TIMEOUT_S))
    asyncio.run(_serve(options, log_settings, wired))


def build(args):
    from faast.kernels.build import BuildError
    from faast.kernels.build import build as build_model

    try:
        build_model(
            args.source,
            args.out,
            target=args.target,
            name=args.name,
            variant=args.variant,
            weights=args.weights,
            hls4ml_config=args.hls4ml_config,
            max_batch_size=args.max_batch_size,
            rows_per_execution=args.rows_per_execution,
            inputs=args.inputs,
            outputs=args.outputs,
            replace=args.replace,
        )
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)


def devices(args):
    from .devices import run

    run(args)


def train(args):
    from faast.kernels.train import train as train_kernel

    train_kernel(args.kernel, epochs=args.epochs, samples=args.samples)


def validate(args):
    from faast.kernels.validate import validate as validate_model

    sys.exit(
        validate_model(
            args.source,
            data=args.data,
            url=args.url,
            out=args.out,
            task=args.task,
            name=args.name,
            weights=args.weights,
            hls4ml_config=args.hls4ml_config,
        )
    )


def bench(args):
    from .loadgen import run

    run(args)


def plan(args):
    from .plan import run

    run(args)


def parser():

    top = argparse.ArgumentParser(prog="faast", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "serve",
        help="serve Triton model repositories over Triton's gRPC and HTTP protocols; takes tritonserver's "
        "command line (faast serve --help)",
        add_help=False,
    )

    p = commands.add_parser(
        "build", help="convert a model (kernel folder, hls4ml YAML or project, Keras, ONNX) into a repository entry"
    )
    p.add_argument(
        "source",
        help="kernel folder (e.g. kernels/facile), hls4ml YAML, Keras .h5/.json/.keras or SavedModel folder, "
        ".onnx, or an hls4ml project directory",
    )
    p.add_argument("--out", required=True, help="model repository to write into")
    p.add_argument("--name", help="model name (default: the kernel's, or the file's stem)")
    p.add_argument(
        "--target",
        default="csim",
        choices=["csim", "u250", "aws-f1"],
        help="board the Vitis project defaults to; u250/aws-f1 serve with device auto",
    )
    p.add_argument("--hls4ml-config", help="YAML or JSON HLSConfig applied over hls4ml's defaults (Keras, ONNX)")
    p.add_argument("--weights", help="weights .h5 for an architecture .json")
    p.add_argument(
        "--max-batch-size", type=int, help="rows per request (default: 64 MiB of FP32 inputs, at most 65536)"
    )
    p.add_argument("--rows-per-execution", type=int, help="rows per kernel execution (default: from the kernel's size)")
    p.add_argument("--inputs", help="comma-separated Triton names for the inputs, in the model's order")
    p.add_argument("--outputs", help="comma-separated Triton names for the outputs, in the model's order")
    p.add_argument("--replace", action="store_true", help="overwrite a model of the same name")
    p.add_argument("--variant", help="build kernel.toml's [variants.NAME] (e.g. resnet50's full)")
    p.set_defaults(run=build)

    p = commands.add_parser("devices", help="the cards XRT and PYNQ see, a repository's xclbins, what runs where")
    p.add_argument("repository", nargs="?", help="model repository to place (default: list the cards only)")
    p.set_defaults(run=devices)

    p = commands.add_parser("train", help="quantization-aware training of a kernel folder's model")
    p.add_argument("kernel")
    p.add_argument("--epochs", type=int, help="override kernel.toml [training] epochs")
    p.add_argument("--samples", type=int, help="override kernel.toml [training] samples")
    p.set_defaults(run=train)
    p = commands.add_parser(
        "validate", help="build a model and compare float, model, kernel (and a server) with a verdict"
    )
    p.add_argument("source", help="anything faast build takes (kernel folder, hls4ml YAML or project, Keras, ONNX)")
    p.add_argument(
        "--data",
        help=".npz: x (or one array per model input, by the model's names) and the truth y; "
        "default for a kernel folder: its data.py",
    )
    p.add_argument(
        "--task", choices=["regression", "classification"], help="physics checks on y (default: kernel.toml's)"
    )
    p.add_argument("--url", help="also compare the model of that name on a running faast at HOST:PORT (gRPC)")
    p.add_argument("--out", default="validation", help="report folder")
    p.add_argument("--name", help="model name (default: as faast build names it); also the name asked of --url")
    p.add_argument("--weights", help="weights .h5 for an architecture .json")
    p.add_argument("--hls4ml-config", help="YAML or JSON HLSConfig applied over hls4ml's defaults (Keras, ONNX)")
    p.set_defaults(run=validate)

    p = commands.add_parser("bench", help="load generator for any Triton-protocol server (gRPC)")
    p.add_argument("url", help="HOST:PORT of the gRPC endpoint")
    p.add_argument("--model", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--concurrency", default="1,2,4,8,16,32,64", help="comma-separated client counts")
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per level")
    p.add_argument("--processes", type=int, help="client processes (default: one per core)")
    p.add_argument("--shared-memory", action="store_true", help="pass tensors through system shared memory")
    p.add_argument(
        "--replicas", help="comma-separated HOST:PORT of the servers behind the balancer at url: summed statistics"
    )
    p.add_argument("--quick", action="store_true", help="concurrency up to 4, 2 s per level")
    p.add_argument("--label", help="legend label in the plots")
    p.add_argument("--out", default="bench_out")
    p.set_defaults(run=bench)

    p = commands.add_parser("plan", help="SONIC capacity model: clients per accelerator before saturation")
    p.add_argument("--t-cpu", type=float, required=True, help="s per event on the CPU alone")
    p.add_argument("--p", type=float, required=True, help="fraction of t_cpu that is offloaded")
    p.add_argument("--t-acc", type=float, help="s of accelerator time per event (or measure with --url)")
    p.add_argument("--t-latency", type=float, default=0.0, help="s per event added by transmission and travel")
    p.add_argument("--n-acc", type=int, help="number of accelerators (servers); default: --replicas' count, or 1")
    p.add_argument("--url", help="measure t_acc from this server's ModelStatistics (gRPC HOST:PORT), or a balancer's")
    p.add_argument("--replicas", help="comma-separated HOST:PORT of the servers behind --url: t_acc from all of them")
    p.add_argument("--model", default="facile")
    p.add_argument("--requests-per-event", type=float, default=1.0)
    p.add_argument("--bench", help="faast bench JSON: plot predicted vs measured latency against clients")
    p.add_argument("--out", help="folder for plan.json and plan.png")
    p.set_defaults(run=plan)
    return top


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:  # tritonserver's command line, read as tritonserver reads it
        from .tritonserver_flags import parse

        serve(parse(argv[1:]), argv[1:])
        return
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.run(args)


if __name__ == "__main__":
    main()
