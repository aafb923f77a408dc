"""The demo: embedded broker, one worker, generated shoppers, a live view."""
