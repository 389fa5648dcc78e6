"""``make fleet``: a fleet of agent workers, real processes on 127.0.0.1, stopped over HTTP.

moto's server in a process of its own; the stop route on uvicorn (a thread here); N agent
hosts (``local.fleet.host``, each embedding one ``Worker``), every one with the same
environment, each creating its own cancel queue under ``WORKER_QUEUE_PREFIX``. Every
conversation is started and stopped ``cycles`` times, a restart landing on another worker
some of the time; partway through, one worker is killed with SIGKILL and another hangs
past the orphan age, while two run with their wall clocks 15 minutes ahead and behind for
the whole run (``local.fleet.faults``). Then runs are held idle a few seconds on every live
worker (the backstop's steady cost), every live worker shuts down cleanly, and the queues
left under the prefix are counted. Every process counts its AWS requests by kind
(``local.fleet.counter``): the cost section of docs/performance.md (``local.fleet.costs``).

    python -m local.fleet                         # 8 workers, 400 conversations, 3 cycles
    python -m local.fleet --output docs/reliability.md --costs docs/performance.md

What is counted comes from the processes' own output and the table: each host writes a
line when a loop starts and ends (with its run id), each worker logs ``conversation_stopped``
(run id, via, stop-to-stopped), and after every stop the row must show
``loop_stopped_via`` and ``loop_stopped_at`` for that run before the conversation restarts.
A "wrong kill" is a loop that ended while no stop had been sent for its run.

The modules: ``config`` (the run's size and timings), ``processes`` (moto's process, the
route, the hosts), ``lines`` (what the hosts write), ``scenario`` (the driver and
``run_fleet``), ``faults`` (the kill and the hang), ``shutdown`` (the run's end), ``tally``
(the counting), ``result`` (the figures), ``checks`` (the one table of targets, which both
the verdict and the section read), ``render`` (the section), ``confirm`` and ``costs`` (the
confirmed stops' and the requests' figures), ``counter`` (AWS requests by kind, in any
process), ``host`` (the agent host process). This package's ``__init__`` imports nothing: a
host process (``python -m local.fleet.host``) loads only what it uses.
"""
