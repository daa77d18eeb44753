"""roomkey.sim.lockme."""
