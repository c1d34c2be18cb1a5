"""A small program that tags values at top level and inside a nested jit, a custom_jvp (relu), a custom_vjp
and a scan, with a hand-written reference of every site."""

import jax
import jax.numpy as jnp
from jax import lax

import jaxinterp as ji


def program(x):
    """Tags at top level, inside a nested jit, a custom_jvp (relu), a custom_vjp, a scan and a while loop."""
    h = ji.tag(jnp.sin(x), "h")
    h = jax.jit(lambda z: ji.tag(z * 2.0, "inner"))(h)
    h = jax.nn.relu(ji.tag(h - 0.5, "pre_relu"))
    h = clip_gradient(ji.tag(h, "before_vjp"))

    def body(carry, xi):
        carry = ji.tag(carry * 0.5 + xi, "carry")
        return carry, carry**2

    last, ys = lax.scan(body, jnp.zeros(()), h)
    return last + ys.sum()


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))


def reference_sites(x):
    h = jnp.sin(x)
    inner = h * 2.0
    pre = inner - 0.5
    post = jnp.maximum(pre, 0.0)
    carries, carry = [], 0.0
    for xi in post:
        carry = carry * 0.5 + xi
        carries.append(carry)
    return {"h": h, "inner": inner, "pre_relu": pre, "before_vjp": post, "carry": jnp.stack(carries)}


X = jnp.array([0.3, 1.2, -0.7, 2.0])
