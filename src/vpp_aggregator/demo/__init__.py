"""A fleet simulator driven by real data, so demos and load tests see realistic availability.

EVs replay the plug-in/unplug sessions of real drivers at the Caltech ACN garage
(`acn_caltech/sessions_caltech.csv`), mapped onto the simulated week by local hour-of-week;
their batteries and power limits are real V2G-capable models
(`prices_nl/ev_specs_v2g_enabled2024.json`) drawn by registration count. Sessions faster than
L2 (DC fast charges) are left out: those drivers top up, they do not park. Stationary
batteries (BESS) cycle gently once a day. State of charge evolves physically: charging while
plugged and below target, trip energy (the kWh the driver really put back at the next session)
consumed while away, efficiency losses both ways.

Pattern time runs `speed` times faster than wall time, while every telemetry timestamp is the
real current UTC time, because the service rejects samples from the future or the far past.
"""
