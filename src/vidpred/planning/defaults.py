"""The planner's default budget and the arms, without imports: ``vidpred plan``'s flags read
them without loading the simulator or torch."""

SAMPLES = 200  # action sequences per CEM iteration (VP2's CEM)
ITERATIONS = 3
ELITE_FRACTION = 0.05  # at least 2 elites
HORIZON = 10
REPLAN_EVERY = 1
MODEL_SAMPLES = 1  # prior samples per action sequence (model arm)
STEPS = 20  # executed steps per episode
EPISODES = 10
ARMS = ("model", "random", "simulator")
