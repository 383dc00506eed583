"""The engine process: the scheduler and controller that decide, the fenced decision writer, and the
relay that sends every recorded decision's commands."""
