# Sourced by no-soft-float.sh and float-routines.sh: which symbol names are float routines.
# Extended regular expressions over a symbol's (demangled) name:
#   FLOAT_ABI   the soft-float ABI of compiler-builtins and libgcc, as the compiler calls it:
#               __aeabi_f*/__aeabi_d* (fadd fsub frsub fmul fdiv fcmp* f2iz f2d i2f ui2f l2f …),
#               __addsf3 __subsf3 __mulsf3 __divsf3 __negsf2 __powisf2, __eqsf2 __nesf2 __ltsf2
#               __lesf2 __gtsf2 __gesf2 __unordsf2 __cmpsf2, __floatsisf __floatunsisf
#               __floatdisf …, __fixsfsi __fixunssfsi …, __extendsfdf2 __truncdfsf2 …, and their
#               df, hf, tf and xf twins; __mulsc3 __divsc3 …
#   FLOAT_IMPL  compiler-builtins' implementations behind them, libm functions left out of line
#   FLOAT_LIBM  the C libm names (expf, sqrtf, …, and their double forms)
FLOAT_ABI='^__aeabi_(c?[fd](add|sub|rsub|mul|div|rdiv|neg|sqrt|cmp[a-z]*)|[fdh]2[a-z0-9]+|u?[il]2[fdh]|ul2[fd])$'
FLOAT_ABI+='|^__(add|sub|mul|div|neg|pow)[hsdtx]f[23]$|^__powi[hsdtx]f2$|^__(eq|ne|lt|le|gt|ge|unord|cmp)[hsdt]f2$'
FLOAT_ABI+='|^__float(un)?[sdt]i[hsdtx]f$|^__fix(uns)?[hsdtx]f[sdt]i$|^__(extend|trunc)[hsdtx]f[hsdtx]f2$'
FLOAT_ABI+='|^__(mul|div)[hsdtx]c3$|^__gnu_(h2f|f2h)_ieee$'
FLOAT_IMPL='^(compiler_builtins::float::|compiler_builtins::math::|libm::)'
FLOAT_LIBM='^(exp|exp2|expm1|log|log2|log10|log1p|pow|sqrt|cbrt|hypot|sin|cos|tan|asin|acos|atan|atan2|sinh|cosh|tanh'
FLOAT_LIBM+='|asinh|acosh|atanh|erf|erfc|tgamma|lgamma|fma|fmod|floor|ceil|round|trunc|rint|nearbyint|ldexp|frexp'
FLOAT_LIBM+='|modf|remainder|fmin|fmax|fdim|scalbn|copysign)f?$'
