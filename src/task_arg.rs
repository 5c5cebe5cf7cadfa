//! The compile-time check that a task's argument is owned, with an error
//! that says what to do.
//!
//! A function such as `fn shout(s: &str)` cannot be a task: its argument
//! arrives as bytes from another process, and `&str` cannot be decoded
//! into without a buffer to borrow from. rustc alone reports this as
//! "implementation of `Deserialize` is not general enough", a lifetime
//! error that `#[diagnostic::on_unimplemented]` cannot reword, since every
//! trait bound holds. So [`task!`](crate::task!) asks a second question
//! that is about types, not lifetimes: is the argument (or an element of
//! the argument tuple) a reference? It asks by method resolution, which
//! prefers an inherent method to a trait method of the same name: the
//! inherent `check*` methods exist only on [`ArgProbe`]s of references and
//! return [`BorrowedArgument`], the trait's return [`OwnedArgument`], and
//! only the latter satisfies [`ArgumentIsOwned`], whose message says what
//! to take instead. A type check fails before the borrow checker runs, so
//! the user sees this error about their function.
//!
//! References inside other types (`Vec<&str>`, `Option<&T>`) are not seen
//! here; they still get rustc's lifetime error.

use std::marker::PhantomData;

use crate::task::TaskFn;

/// The argument type of a task function, as a type to call methods on.
#[doc(hidden)]
#[derive(Debug)]
pub struct ArgProbe<Args>(PhantomData<fn() -> Args>);

/// The probe of `f`'s argument (its tuple, for several arguments).
#[doc(hidden)]
pub fn arg_probe<F, Args, M>(_f: &F) -> ArgProbe<Args>
where
    F: TaskFn<Args, M>,
{
    ArgProbe(PhantomData)
}

/// What the check of a borrowed argument returns: not [`ArgumentIsOwned`].
#[doc(hidden)]
#[derive(Debug)]
pub struct BorrowedArgument;

/// What the check of an owned argument returns.
#[doc(hidden)]
#[derive(Debug)]
pub struct OwnedArgument;

/// Holds for an owned task argument only.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "a task's argument cannot be a reference: it arrives as bytes from another process",
    label = "this task takes a reference",
    note = "take `String` for `&str`, `Vec<u8>` for `&[u8]`, `T` for `&T`, and submit an owned value"
)]
pub trait ArgumentIsOwned {}

// Not offered as a hint in the error: the user never names these types.
#[diagnostic::do_not_recommend]
impl ArgumentIsOwned for OwnedArgument {}

/// Compiles only for an owned argument.
#[doc(hidden)]
pub fn assert_owned<T: ArgumentIsOwned>(_checked: T) {}

/// The trait methods that answer "owned".
macro_rules! owned_by_default {
    ($($method:ident),*) => {
        $(
            /// Owned: the inherent method of this name, for a reference,
            /// does not apply.
            fn $method(&self) -> OwnedArgument {
                OwnedArgument
            }
        )*
    };
}

/// The answer for every argument the inherent methods below do not claim:
/// `check` for the argument, `check_i` for element `i` of the tuple.
#[doc(hidden)]
pub trait OwnedByDefault {
    owned_by_default!(check, check_0, check_1, check_2, check_3, check_4, check_5);
}

impl<Args> OwnedByDefault for ArgProbe<Args> {}

impl<T: ?Sized> ArgProbe<&T> {
    /// A single argument that is a shared reference.
    pub fn check(&self) -> BorrowedArgument {
        BorrowedArgument
    }
}

impl<T: ?Sized> ArgProbe<&mut T> {
    /// A single argument that is a mutable reference.
    pub fn check(&self) -> BorrowedArgument {
        BorrowedArgument
    }
}

/// `ArgProbe<(.., &T, ..)>::check_i` for element `i` of a tuple of `n`.
macro_rules! borrowed_element {
    ($method:ident: $($before:ident),* ; $($after:ident),*) => {
        impl<'a, $($before,)* T: ?Sized, $($after,)*> ArgProbe<($($before,)* &'a T, $($after,)*)> {
            /// This element of the argument tuple is a shared reference.
            pub fn $method(&self) -> BorrowedArgument {
                BorrowedArgument
            }
        }
        impl<'a, $($before,)* T: ?Sized, $($after,)*> ArgProbe<($($before,)* &'a mut T, $($after,)*)> {
            /// This element of the argument tuple is a mutable reference.
            pub fn $method(&self) -> BorrowedArgument {
                BorrowedArgument
            }
        }
    };
}

borrowed_element!(check_0: ; B);
borrowed_element!(check_1: A ; );
borrowed_element!(check_0: ; B, C);
borrowed_element!(check_1: A ; C);
borrowed_element!(check_2: A, B ; );
borrowed_element!(check_0: ; B, C, D);
borrowed_element!(check_1: A ; C, D);
borrowed_element!(check_2: A, B ; D);
borrowed_element!(check_3: A, B, C ; );
borrowed_element!(check_0: ; B, C, D, E);
borrowed_element!(check_1: A ; C, D, E);
borrowed_element!(check_2: A, B ; D, E);
borrowed_element!(check_3: A, B, C ; E);
borrowed_element!(check_4: A, B, C, D ; );
borrowed_element!(check_0: ; B, C, D, E, G);
borrowed_element!(check_1: A ; C, D, E, G);
borrowed_element!(check_2: A, B ; D, E, G);
borrowed_element!(check_3: A, B, C ; E, G);
borrowed_element!(check_4: A, B, C, D ; G);
borrowed_element!(check_5: A, B, C, D, E ; );

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(_: String, _: u64) {}
    fn one(_: Vec<u8>) {}

    #[test]
    fn owned_arguments_pass_every_check() {
        let p = arg_probe(&one);
        assert_owned(p.check());
        let p = arg_probe(&owned);
        assert_owned(p.check());
        assert_owned(p.check_0());
        assert_owned(p.check_1());
        assert_owned(p.check_5());
    }

    #[test]
    fn a_borrowed_argument_is_found_by_type() {
        fn shout(_: &str) {}
        fn second(_: u64, _: &[u8]) {}
        assert!(matches!(arg_probe(&shout).check(), BorrowedArgument));
        assert!(matches!(arg_probe(&second).check_1(), BorrowedArgument));
        assert!(matches!(arg_probe(&second).check_0(), OwnedArgument));
    }
}
