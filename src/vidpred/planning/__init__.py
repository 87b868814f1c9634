"""Visual model-predictive control with a learned video model, scored in the simulator.

``env``: seeded push-to-goal tasks in the synthetic world; ``cost``: the colour-centroid
cost of predicted frames and the model / simulator predictors; ``cem``: the CEM planner
and random actions; ``mpc``: closed-loop episodes per arm and the JSON; ``defaults``: the budget;
``commands``: ``vidpred plan`` (docs/planning.md). Models and data do not import this package.
"""
