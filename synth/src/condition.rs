//! Conditions compiled against the generator's schema and evaluated a whole
//! chunk at a time with Arrow kernels. A null value makes its comparison
//! false (so `not` of it is true), as in the row-wise definition.

use super::rules::{Condition, Literal};
use arrow::array::{Array, ArrayRef, BooleanArray, Float64Array, Scalar, StringArray};
use arrow::compute::kernels::{boolean, cmp};
use arrow::compute::{cast, prep_null_mask_filter};
use arrow::datatypes::{DataType, Schema};
use kiln_engine::error::{KilnError, Result};

pub(super) enum Operand {
    Num(f64),
    Bool(bool),
    Text(String),
}

pub(super) enum Op {
    Eq,
    Lt,
    Gt,
}

pub(super) enum CompiledCond {
    Compare(usize, Op, Operand),
    And(Vec<CompiledCond>),
    Or(Vec<CompiledCond>),
    Not(Box<CompiledCond>),
}

fn is_numeric(t: &DataType) -> bool {
    t.is_numeric() || matches!(t, DataType::Timestamp(..))
}

impl CompiledCond {
    /// Compiles `c` for the column `rule`, checking names and types.
    pub(super) fn compile(c: &Condition, schema: &Schema, rule: &str) -> Result<CompiledCond> {
        let column = |name: &str| {
            schema.index_of(name).map_err(|_| {
                KilnError::config(format!(
                    "rule for column '{rule}': condition refers to unknown column '{name}'"
                ))
            })
        };
        let compare = |name: &str, op: Op, lit: &Literal| -> Result<CompiledCond> {
            let i = column(name)?;
            let t = schema.field(i).data_type();
            let operand = match lit {
                Literal::Number(x) if is_numeric(t) => Operand::Num(*x),
                Literal::Bool(b) if t == &DataType::Boolean => Operand::Bool(*b),
                Literal::Text(s) if matches!(t, DataType::Utf8 | DataType::LargeUtf8) => {
                    Operand::Text(s.clone())
                }
                other => {
                    return Err(KilnError::config_fix(
                        format!(
                            "rule for column '{rule}': condition compares '{name}' ({t}) with {other:?}"
                        ),
                        "compare a column with a value of its own type",
                    ));
                }
            };
            if !matches!(op, Op::Eq) && !matches!(operand, Operand::Num(_)) {
                return Err(KilnError::config(format!(
                    "rule for column '{rule}': lt/gt need a numeric column, '{name}' is {t}"
                )));
            }
            Ok(CompiledCond::Compare(i, op, operand))
        };
        Ok(match c {
            Condition::Eq(col, l) => compare(col, Op::Eq, l)?,
            Condition::Ne(col, l) => CompiledCond::Not(Box::new(compare(col, Op::Eq, l)?)),
            Condition::Lt(col, x) => compare(col, Op::Lt, &Literal::Number(*x))?,
            Condition::Gt(col, x) => compare(col, Op::Gt, &Literal::Number(*x))?,
            Condition::In(col, ls) => CompiledCond::Or(
                ls.iter()
                    .map(|l| compare(col, Op::Eq, l))
                    .collect::<Result<_>>()?,
            ),
            Condition::And(cs) => CompiledCond::And(
                cs.iter()
                    .map(|c| Self::compile(c, schema, rule))
                    .collect::<Result<_>>()?,
            ),
            Condition::Or(cs) => CompiledCond::Or(
                cs.iter()
                    .map(|c| Self::compile(c, schema, rule))
                    .collect::<Result<_>>()?,
            ),
            Condition::Not(c) => CompiledCond::Not(Box::new(Self::compile(c, schema, rule)?)),
        })
    }

    /// Evaluates over the columns built so far; the result has no nulls.
    pub(super) fn eval(&self, columns: &[Option<ArrayRef>], rows: usize) -> Result<BooleanArray> {
        let err = |e: arrow::error::ArrowError| KilnError::config(format!("condition: {e}"));
        Ok(match self {
            CompiledCond::Compare(i, op, operand) => {
                let Some(array) = columns[*i].as_ref() else {
                    return Ok(BooleanArray::from(vec![false; rows]));
                };
                let result = match operand {
                    Operand::Num(x) => {
                        let values = cast(array, &DataType::Float64).map_err(err)?;
                        let lit = Scalar::new(Float64Array::from(vec![*x]));
                        match op {
                            Op::Eq => cmp::eq(&values, &lit),
                            Op::Lt => cmp::lt(&values, &lit),
                            Op::Gt => cmp::gt(&values, &lit),
                        }
                    }
                    Operand::Bool(b) => cmp::eq(array, &Scalar::new(BooleanArray::from(vec![*b]))),
                    Operand::Text(s) => {
                        let values = cast(array, &DataType::Utf8).map_err(err)?;
                        cmp::eq(&values, &Scalar::new(StringArray::from(vec![s.as_str()])))
                    }
                }
                .map_err(err)?;
                if result.null_count() > 0 {
                    prep_null_mask_filter(&result)
                } else {
                    result
                }
            }
            CompiledCond::And(cs) => {
                let mut acc = BooleanArray::from(vec![true; rows]);
                for c in cs {
                    acc = boolean::and(&acc, &c.eval(columns, rows)?).map_err(err)?;
                }
                acc
            }
            CompiledCond::Or(cs) => {
                let mut acc = BooleanArray::from(vec![false; rows]);
                for c in cs {
                    acc = boolean::or(&acc, &c.eval(columns, rows)?).map_err(err)?;
                }
                acc
            }
            CompiledCond::Not(c) => boolean::not(&c.eval(columns, rows)?).map_err(err)?,
        })
    }
}
