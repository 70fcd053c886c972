from runpod_queue.cli import main

main()
