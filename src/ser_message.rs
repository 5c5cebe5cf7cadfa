//! The message of a failed serialization.
//!
//! postcard's error keeps only its kind: a `Serialize` impl that fails with
//! `serde::ser::Error::custom("a Handle cannot cross a process boundary")`
//! reaches the user as "Serde Serialization Error". To keep the message,
//! the value is serialized again, after postcard failed, into a serializer
//! that writes nothing and whose error records the custom message.

use std::fmt;

use serde::ser::{self, Serialize};

/// The custom message `value`'s `Serialize` impl fails with, if any.
pub(crate) fn custom_message<T: Serialize + ?Sized>(value: &T) -> Option<String> {
    value.serialize(Discard).err().map(|Custom(msg)| msg)
}

/// The error of [`Discard`]: the message given to `custom`.
#[derive(Debug)]
struct Custom(String);

impl fmt::Display for Custom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Custom {}

impl ser::Error for Custom {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        Custom(msg.to_string())
    }
}

/// A serializer that accepts everything and writes nothing.
struct Discard;

type R = Result<(), Custom>;

/// Serializer methods that take their arguments and return `Ok($value)`.
macro_rules! accept {
    ($ret:ty = $value:expr; $($name:ident($($t:ty),*)),* $(,)?) => {
        $(fn $name(self, $(_: $t),*) -> $ret { Ok($value) })*
    };
}

impl ser::Serializer for Discard {
    type Ok = ();
    type Error = Custom;
    type SerializeSeq = Discard;
    type SerializeTuple = Discard;
    type SerializeTupleStruct = Discard;
    type SerializeTupleVariant = Discard;
    type SerializeMap = Discard;
    type SerializeStruct = Discard;
    type SerializeStructVariant = Discard;

    accept!(R = ();
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
        serialize_unit_variant(&'static str, u32, &'static str),
    );

    // The compound values: their elements are serialized into `Discard`
    // again (see the `ser::Serialize*` impls below).
    accept!(Result<Discard, Custom> = Discard;
        serialize_seq(Option<usize>),
        serialize_tuple(usize),
        serialize_tuple_struct(&'static str, usize),
        serialize_tuple_variant(&'static str, u32, &'static str, usize),
        serialize_map(Option<usize>),
        serialize_struct(&'static str, usize),
        serialize_struct_variant(&'static str, u32, &'static str, usize),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        value.serialize(self)
    }
}

/// The `ser::Serialize*` traits of one method per element (`$method`,
/// with a field name `$key` for the structs) and `end`.
macro_rules! compound {
    ($($tr:ident :: $method:ident $(($key:ty))?),* $(,)?) => {$(
        impl ser::$tr for Discard {
            type Ok = ();
            type Error = Custom;
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $key,)? value: &T) -> R {
                value.serialize(Discard)
            }
            fn end(self) -> R {
                Ok(())
            }
        }
    )*};
}

compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str),
);

impl ser::SerializeMap for Discard {
    type Ok = ();
    type Error = Custom;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> R {
        key.serialize(Discard)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(Discard)
    }
    fn end(self) -> R {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Handle;

    impl Serialize for Handle {
        fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(ser::Error::custom(
                "a Handle cannot cross a process boundary",
            ))
        }
    }

    #[test]
    fn the_custom_message_is_kept_even_deep_inside() {
        assert_eq!(
            custom_message(&Handle).as_deref(),
            Some("a Handle cannot cross a process boundary")
        );
        let nested = (1u8, vec![Some(Handle)], "x");
        assert_eq!(
            custom_message(&nested).as_deref(),
            Some("a Handle cannot cross a process boundary")
        );
        assert_eq!(custom_message(&(1u8, "fine")), None);
    }

    #[test]
    fn structs_variants_and_maps_are_looked_into() {
        #[derive(serde::Serialize)]
        struct Named {
            ok: u8,
            handle: Handle,
        }
        #[derive(serde::Serialize)]
        enum Shapes {
            Fields { handle: Handle },
            Tuple(u8, Handle),
        }
        let msg = Some("a Handle cannot cross a process boundary");
        let named = Named {
            ok: 1,
            handle: Handle,
        };
        assert_eq!(custom_message(&named).as_deref(), msg);
        let fields = Shapes::Fields { handle: Handle };
        assert_eq!(custom_message(&fields).as_deref(), msg);
        assert_eq!(custom_message(&Shapes::Tuple(1, Handle)).as_deref(), msg);
        let map = std::collections::BTreeMap::from([(1u8, Handle)]);
        assert_eq!(custom_message(&map).as_deref(), msg);
    }
}
