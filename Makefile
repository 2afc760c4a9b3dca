# The two fresh-machine commands from the README. Each does all of its own set-up.
.PHONY: demo test setup fuzz chaos
demo:
	bash deploy/dev.sh demo
test:
	bash deploy/dev.sh test
setup:
	bash deploy/dev.sh setup
fuzz:
	bash deploy/dev.sh fuzz
chaos:
	bash deploy/dev.sh chaos
