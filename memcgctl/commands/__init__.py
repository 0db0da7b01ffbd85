"""Click commands: each module only wires the layers together (parse options, call the
kernel, logic, state and action layers, hand the result to the rendering layer)."""
