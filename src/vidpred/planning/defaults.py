"""The planner's default budget and the arms, without imports: ``vidpred plan``'s flags read
them without loading the simulator or torch."""

# VP2's CEM scores 200 samples x 3 iterations per plan: 6.5 s per plan with the demo's model on
# the 2-core CPU (11 s with 1 thread; benchmarks/RESULTS.md). The default budget is cut to 60
# samples and replans after every step as VP2 does: 3.1-4.6 s per executed step there with the
# tracked cost (horizon 5: 1.6-1.7 s, and 30% of 50 tasks against 36%; docs/results.md).
SAMPLES = 60  # action sequences per CEM iteration
ITERATIONS = 3
ELITE_FRACTION = 0.05  # at least 2 elites
HORIZON = 10
REPLAN_EVERY = 1
STILL = True  # score the zero-motion sequence in every CEM iteration
MAX_STEP_PX = 3.0  # largest |(dx, dy)| the planner commands per step, px (the data's scripted arm: <= 3)
MOVE_COST = 0.2  # cost per px of planned arm travel (0.05 until 2026-11-27: docs/results.md)
EXECUTES = ("best", "mean")  # the plan executed: the best sequence scored, or CEM's final elite mean; the default first
MODEL_SAMPLES = 1  # prior samples per action sequence (model arm)
COSTS = ("tracked", "final")  # how the model arm reads the object's position (planning/cost.py); the default first
STEPS = 15  # executed steps per episode
EPISODES = 10
ARMS = ("model", "random", "simulator")
